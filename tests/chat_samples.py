"""Chat's documented sample webhooks (comments removed) and its plain OK answer."""

OK = b'{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}'

# EventTime is quoted, as in Chat's documentation samples.
BEFORE_CREATE_SAMPLE = {
    "CallbackCommand": "Group.CallbackBeforeCreateGroup",
    "Operator_Account": "leckie",
    "Owner_Account": "leckie",
    "Type": "Public",
    "Name": "MyFirstGroup",
    "CreateGroupNum": 123,
    "MemberList": [{"Member_Account": "bob"}, {"Member_Account": "peter"}],
    "EventTime": "1670574414123",
}
GROUP_FULL_SAMPLE = {
    "CallbackCommand": "Group.CallbackAfterGroupFull",
    "GroupId": "@TGS#2J4SZEAEL",
    "EventTime": "1670574414123",
}
